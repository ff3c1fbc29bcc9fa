"""`python -m mailmoat` runs the CLI."""

from mailmoat.cli import main

if __name__ == "__main__":
    main()
