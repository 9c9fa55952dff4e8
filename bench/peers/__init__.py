"""No-op worker apps of taskhub's peers, each run the way its own docs run workers.

Every app has one task that takes one small JSON argument (``{"message": i}``) and does
nothing with it; ``bench/throughput.py`` drains thousands of them to compare work rates.
The worker processes import these modules with ``bench/`` on ``PYTHONPATH``.
"""
