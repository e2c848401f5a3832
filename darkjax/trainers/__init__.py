"""Trainers: one module per paper, each exposing `Task(config)` for darkjax.train."""
