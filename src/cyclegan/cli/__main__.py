from cyclegan.cli import main

main()
