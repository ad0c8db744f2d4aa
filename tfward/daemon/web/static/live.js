// live updates: filled in once the run event streams land
