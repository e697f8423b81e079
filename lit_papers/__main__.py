"""``python -m lit_papers`` == ``lit-papers``."""


def main() -> None:
    from lit_papers.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
