-- Stand-in (see 000).
ALTER TABLE "Form" ADD COLUMN IF NOT EXISTS description TEXT;
