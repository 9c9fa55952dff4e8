"""Stand-ins for the outside world: small real HTTP services the examples talk to.

They serve the demo (``taskhub up --demo``) and the tests, which run them as real servers
under uvicorn, never as mocks.
"""
