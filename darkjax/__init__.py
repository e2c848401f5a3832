"""darkjax: action recognition in dark, low-light and infrared video, in JAX/Flax."""

__version__ = "0.1.0"
