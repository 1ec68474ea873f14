from capd.cli import main

raise SystemExit(main())
