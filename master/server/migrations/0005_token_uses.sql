-- Join tokens limited in uses (`bramble token create --uses N`): the joins left, NULL = no limit.
-- Decremented atomically at each join; a token at 0 admits no one.
ALTER TABLE tokens ADD COLUMN uses_left INTEGER;
