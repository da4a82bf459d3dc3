"""The Braze side: the HTTP client of each endpoint family (client), the requests of each kind
(payload), and the local Braze-compatible endpoint of the demo and the tests (local).
"""
