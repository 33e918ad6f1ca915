"""`monitor review`: the web page over the change log and the captures (`app`), its SQLite event
index that follows the log (`index`), and the capture folders it reads and corrects
(`corrections`)."""
