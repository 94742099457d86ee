"""Videos of policies: frames of one robot drawn headless, encoded as MP4, GIF and a contact sheet."""
