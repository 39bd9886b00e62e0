"""A site's own user model: signs in by email, has no ``username``."""
