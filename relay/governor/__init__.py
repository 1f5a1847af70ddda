"""Send-rate governance: what the delivery pipeline asks before each attempt (DESIGN step 2)."""
