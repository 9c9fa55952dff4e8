"""The manufacturing example's analytics family: metrics, customer activity, daily KPIs."""
