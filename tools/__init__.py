"""The benchmarks and profilers: run from the repository's root (python -m tools.NAME, or the make
targets), never copied into an image. They import the app; nothing under app/ imports them."""
