"""Speed and accuracy benchmarks behind ``terraloc bench ...`` (each also runnable with ``python -m``)."""
