from hmls.cli import main

raise SystemExit(main())
