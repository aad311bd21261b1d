from ignitevm.cli.main import main

raise SystemExit(main())
