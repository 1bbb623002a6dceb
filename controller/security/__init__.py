"""A site's secrets: its certificate authority and certificates (pki), its broker accounts and ACL."""
