from ds2hub.cli.main import main

raise SystemExit(main())
