"""Reputation watch (DESIGN "Reputation watch"): what the rest of the internet says about
the mail relay sends.

    blocklists.py      DNS blocklist lookups of the routes' egress IPs and the domains, and
                       what a zone's answer means (`zones.yaml`)
    aggregate.py       a DMARC aggregate report, as relay keeps it
    dmarc_reports.py   reading reports: mail, .xml, .xml.gz, .zip, safely
"""
