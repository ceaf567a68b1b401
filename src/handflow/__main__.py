from handflow.cli import main

main()
