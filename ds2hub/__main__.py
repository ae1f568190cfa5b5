from ds2hub.cli import main

raise SystemExit(main())
