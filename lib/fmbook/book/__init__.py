"""The book's machinery: profiles, runner, results, the notebook API, the book build and status page.

It imports the shared parts (:mod:`fmbook.core`) and no method module."""
