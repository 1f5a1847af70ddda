"""relay: an SMTP relay proxy between business applications and an email provider."""
