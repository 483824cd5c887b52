from taskgate.cli.main import main

main()
