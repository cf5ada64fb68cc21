"""Small helpers shared by every stage (standard library only)."""
