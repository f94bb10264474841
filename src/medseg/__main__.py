"""``python -m medseg`` (and ``torchrun … -m medseg train cfg.yaml``): the command line."""

from medseg.cli import app

if __name__ == "__main__":
    app(prog_name="medseg")
