"""Qt-free core: jobs, the inference engine, and one module per model family."""
