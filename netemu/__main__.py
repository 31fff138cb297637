from netemu.cli.main import main

raise SystemExit(main())
