from tests.bench.control.bench import main

raise SystemExit(main())
