"""The benchmarks and profilers, and vendor_kserve_schema (tests/data/kserve/): run from the
repository's root (python -m tools.NAME, or the make targets), never copied into an image. They may
import the app; nothing under app/ imports them."""
