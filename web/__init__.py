"""The dashboard (`web`, :3000): server-rendered pages over the same
services as the management API, behind a session signed in with a
workspace secret key."""
