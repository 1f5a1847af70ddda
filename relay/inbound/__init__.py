"""The SMTP side: listeners, the aiosmtpd adapter, and the acceptance pipeline."""
