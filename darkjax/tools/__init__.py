"""Command-line tools: `python -m darkjax.tools.bench` (train-step speed vs PyTorch), ..."""
