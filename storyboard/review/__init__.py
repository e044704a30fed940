"""`storyboard review`: a local page to look at the comic, compare candidates, pick, reroll and fix
panels, over the same application layer as the CLI (see server.py for the routes, worker.py for the
render queue, security.py for the guards)."""
