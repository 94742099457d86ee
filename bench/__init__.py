"""Speed measurements: our trainer against Isaac Lab's, multi-GPU scaling, time to first iteration, and where one
iteration spends its time."""
