"""Runnable demos of lit-align end to end, and the synthetic sort task they (and the tests) train on."""
