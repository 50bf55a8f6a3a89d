from pipeline.apps.cli import main

main()
