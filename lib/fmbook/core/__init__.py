"""Shared parts every chapter uses: assets, data, models, statistics, claims, plotting."""
