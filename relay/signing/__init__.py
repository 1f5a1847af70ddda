"""DKIM signing (RFC 6376, RFC 8463) with keys held by OpenSSL."""
