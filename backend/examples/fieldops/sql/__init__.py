"""Field operations' named SQL (the workers' side), loaded by ``load_queries(__name__)``."""
