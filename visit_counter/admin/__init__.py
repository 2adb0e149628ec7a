"""Admin operations: set a page's count, export, import, and the audit log of such changes."""
