"""The warehouse: table definitions, their protection, and the audited partition commit."""
