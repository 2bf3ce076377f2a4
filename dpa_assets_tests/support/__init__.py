"""Helpers the tests share: a throwaway PostgreSQL server, warehouse inspection."""
