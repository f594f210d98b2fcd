from extmm.cli import main

raise SystemExit(main())
