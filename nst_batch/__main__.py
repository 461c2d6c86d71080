from nst_batch.cli import main

main()
