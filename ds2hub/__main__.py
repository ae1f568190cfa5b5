from ds2hub.cli import main

main()
