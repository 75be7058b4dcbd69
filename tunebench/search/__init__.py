"""Search: tuning the lowered tasks with MetaSchedule, and writing every measured candidate to a log.

``driver`` runs the search (budgets, carried-over schedules, the tuner strategies, resume);
``measure`` and ``rpc`` time candidates here or on a fleet of machines (``fleet``, ``addresses``);
``siblings`` times the best schedules of tasks sharing a conv against each other, side by side;
``settings`` holds the timing protocol; ``costmodel`` keeps the cost model beside the log;
``progress`` draws the run and ``tvmlog`` keeps TVM's own messages off the terminal. Hands the next
stage a log of records (``logs``).
"""
