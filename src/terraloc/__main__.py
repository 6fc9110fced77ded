"""``python -m terraloc`` runs the command line."""

from terraloc.cli.app import entrypoint

if __name__ == "__main__":
    entrypoint()
