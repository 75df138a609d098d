"""The shipped tiny M3 / MQT / LLaVA models, their synthetic benchmark, and the `demo` command."""
