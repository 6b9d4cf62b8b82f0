from fmbook.book.cli import main

raise SystemExit(main())
