from transformerkit.cli import main

raise SystemExit(main())
