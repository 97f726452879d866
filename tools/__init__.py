"""The benchmarks and profilers, vendor_kserve_schema (tests/data/kserve/) and vendor_crd_schema (the
JobSet, Trainer and TFJob schemas in tests/data/): run from the
repository's root (python -m tools.NAME, or the make targets), never copied into an image. They may
import the app; nothing under app/ imports them."""
