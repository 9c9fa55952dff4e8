"""The schedule sync example's named SQL, loaded by ``load_queries(__name__)``."""
