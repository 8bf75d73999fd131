from modelkin.cli.app import main

main()
